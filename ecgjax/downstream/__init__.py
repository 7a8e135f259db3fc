"""The downstream model: one encoder with named output heads, trained on labels.

The probe's recipe stages (ecgjax.eval.recipe) and the annotation heads
(ecgjax.annotate.train_heads) all build, train, save and apply this one product.

heads    what a head predicts (kind, classes, scale) and its masked loss and scores
network  the flax model from an encoder config, pretrained weights grafted in, lead adaptation
step     the jitted train step (frozen encoder: heads on fixed features; or all weights)
batches  fixed-size batched application of a jitted function; an epoch's shuffled (crop) batches
records  labelled records (x, lengths, y) as the stages train on them
fit      the fit loop: epochs of the step, the best validation epoch kept, early stopping
model    TrainedModel: predict / save; load_model (the one save format)
"""
