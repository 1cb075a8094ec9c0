"""The trading loop: market bars, features, paper positions, the decision journal, replay.

Pure logic (features, positions, metrics) imports neither onnxruntime nor aiohttp; the journal
and the feeds are the I/O edges.
"""
