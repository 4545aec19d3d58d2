"""Input and output: corpora in, checkpoints and saved models in and out.

These modules move data across the package's edge (files, downloads, text) and contain no
equation of docs/, which is why they live apart from the model:

- ``ptb.py``: the Penn Treebank corpus: download, cache, vocabulary, ids, batch iterator.
- ``text.py``: plain text (e.g. Shakespeare) cleaned into words and ids.
- ``checkpoint.py``: the checkpoint file format (zip of .npy arrays plus JSON metadata).
- ``saving.py``: ``save_model``/``load_model`` of a ``LanguageModel`` with its vocabulary.
- ``run_folder.py``: a training run's folder: lock, atomic writes, resume checks, segments.
"""
