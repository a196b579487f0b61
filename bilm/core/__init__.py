"""The model core: what both wings use.

- ``options``, ``layout``: a model's options (options.json) and every parameter's name and shape;
- ``network``: the one definition of the biLM (char CNN, highway, projection, LSTMs);
- ``states``, ``warm_cache``: where LSTM states start; the warm states kept on disk;
- ``precision``, ``sessions``: numeric precision, session settings;
- ``inference``, ``elmo``, ``pooling``: ``BidirectionalLanguageModel``, ``weight_layers``, masked pooling;
- ``vocabulary``, ``batching``, ``text``: vocabularies and character ids, batchers, reading text;
- ``weights``, ``files``, ``download``: weight files; outputs that are never half-written (atomic
  files, locks, resumable part files); published models by name;
- ``prefetch``, ``startup``, ``lazy``: work in a background thread; TensorFlow's quiet start-up;
  a package's names loaded when first used.

Nothing here imports the training or the embedding wing, or the command line.
"""
