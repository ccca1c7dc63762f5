"""nlpbatch: distributed fine-tuning (NER, extractive QA, text classification) and corpus annotation on Ray.

`nlpbatch.load(model)` annotates in this process (nlpbatch.api); the command line is `nlpbatch --help`."""

__version__ = "0.1.0"


def load(model: str, task: str | None = None, **settings):
    """A fine-tuned model ready to annotate strings, lists and tables in this process (see nlpbatch.api)."""
    from nlpbatch.api import load as load_model

    return load_model(model, task, **settings)
