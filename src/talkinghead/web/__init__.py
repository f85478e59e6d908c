"""The local web demo (``talkinghead web``): a Gradio page over the same pipeline as the CLI."""
