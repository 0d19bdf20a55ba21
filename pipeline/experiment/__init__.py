"""The comparison runner: the TOML schema, the cached first stage, the loaded inputs, what a comparison
measured, its report, and the demo.
"""
