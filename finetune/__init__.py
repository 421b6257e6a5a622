"""maskahand.finetune: see `maskahand finetune --help`."""
