"""Models: packaging, the pyfunc loader, the registry and deployment.

Not built yet: no issue has asked for it. DESIGN.md describes what goes here.
"""
