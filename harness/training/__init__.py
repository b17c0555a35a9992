"""The Lightning side: the only modules that know Lightning's Trainer.

    assembly  `assemble`: a run's context, bus and subscribers, put together in one place
    callback  `BusCallback`: Lightning hooks in, typed events out
    model     `Classifier`: a torchvision network as a LightningModule
    data      the ImageFolder scan and the data module
    sampler   the class-balanced sampler that records its draws
    fit       `run`: a whole training run from settings
    evaluation  a checkpoint through ``trainer.test``; a run's ``test/`` split

Its modules are imported by name; importing this package imports none of them.
"""

__all__ = ["assembly", "callback", "data", "evaluation", "fit", "model", "sampler"]
