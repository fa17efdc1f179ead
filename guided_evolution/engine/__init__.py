"""Driving a run: the session (start/resume), the driver (loop and scheduler), the proposer, the recorder."""
