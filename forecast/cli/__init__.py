"""The ``forecast`` command line: the composition root that wires library pieces together."""
