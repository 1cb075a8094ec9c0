"""Keeps a live trading bot on its newest good ONNX model."""

from loguru import logger

# A library adds no log sinks: the entry point (app.__main__) or the embedding host does.
logger.disable("app")

__all__: list[str] = []
