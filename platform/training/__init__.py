"""Training: everything between SageMaker's input folders and a saved model.

`trainer.run_training` is `sagecraft train`: it reads the job's configuration, reads the channels
(`data`, `formats`), encodes labels, cross-validates, fits through the algorithm's plugin, saves
the model with its manifest and writes the report.
"""
