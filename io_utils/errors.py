"""Errors that are expected in normal use and are reported as one line, without a traceback."""


class VideoError(Exception):
    """This video cannot be processed (missing, corrupt, too short...); the other videos go on."""


class UsageError(Exception):
    """The run as asked cannot start (bad list file, colliding outputs, missing checkpoint...)."""
