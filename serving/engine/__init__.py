"""Text-generation engines behind the server: vLLM in production, transformers+PEFT as the reference."""
