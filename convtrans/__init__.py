"""convtrans: efficient sequence-to-sequence models (LightConv, DynamicConv, Synthesizer,
Lite Transformer, Transformer) for translation and summarization, from one CLI."""

__version__ = "0.1.0"
