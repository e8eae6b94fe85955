"""Training: the loop (trainer.py), from options to a running trainer (setup.py), optimizer and
schedule (optim.py), validation during training (validation.py), run directories (rundir.py)."""
