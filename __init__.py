"""maskahand: MaskAHand self-supervised pretraining and Afformer for video-to-image affordance grounding."""

__version__ = "0.1.0"
