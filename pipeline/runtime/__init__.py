"""The file and process safety layer: atomic writes, the output guard, journals of finished work, torchrun,
clean stops, progress bars, devices, the hub's offline rule and Java for Pyserini.
"""
