"""Training (Keras 3, any backend): `segzoo train` reads a MoNuSeg-layout folder, carves a
validation split out of it (never the test set), trains on seeded augmented patches, keeps the
checkpoint with the best validation Dice, chooses the decision threshold and the watershed
distance on the validation split, and writes a model folder (config.json + model.weights.h5)
plus training_log.csv.

run (train(): the orchestration), options (TrainOptions), split (the validation split),
run_folder (the run folder, its state and checkpoint), sources (--init-from, --settings-from),
model (building and compiling, the dtype policy), callbacks (validation, checkpoints, log,
time budget), averaging (the weight moving average), precise_bn, selection (threshold and
post-processing chosen on validation), losses, augment (patch sampling) and pipeline (the
batch stream). The inference path never imports this package.
"""
