"""A real S3-compatible server on loopback (moto's server mode), shared by the s3 tests of a module.

The product talks to it only through pyarrow.fs, with endpoint and credentials from the AWS_*
variables; boto3 is used here only to create buckets and upload objects."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def s3():
    """(the AWS_* variables pointing at the server, a boto3 client); buckets `crawl` and `out`.
    The variables are also set in this process, which reads results through the same fs layer."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    for bucket in ("crawl", "out"):
        client.create_bucket(Bucket=bucket)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield env, client
    server.stop()
