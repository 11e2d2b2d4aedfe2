"""The ``circuitcut`` command line: each verb is a thin shell over one Python API call."""
