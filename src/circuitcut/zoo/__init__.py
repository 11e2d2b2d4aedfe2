"""The reference-model zoo: a synthetic language, its tokenizer, training code and shipped models."""
