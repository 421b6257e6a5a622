"""maskahand.pretrain: see `maskahand pretrain --help`."""
