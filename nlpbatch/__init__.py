"""nlpbatch: distributed NER / extractive-QA fine-tuning and corpus annotation on Ray."""

__version__ = "0.1.0"
