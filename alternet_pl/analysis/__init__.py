"""Pure-PyTorch analyses: functions over (model, loss_fn, batches) that know nothing of Lightning.

Convention: ``loss_fn(model, batch) -> (loss_mean, num_samples[, num_correct])``.
"""
