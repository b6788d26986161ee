"""The bad-input catalogue: every entry point (the op, the ONNX tools, checkpoints, the TensorRT plugin's
fields, the command line, the HTTP server) given named bad inputs, each with the message it must produce.
Every test here carries the ``bad_input`` marker; the run's summary counts them."""
