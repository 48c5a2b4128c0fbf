"""Output formats: WebDataset tars and the manifest that lists them."""
