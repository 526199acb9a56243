"""restore: GAN-augmented image restoration toolkit.

Nothing is imported here on purpose: one broken optional dependency must not
break `import restore` (see shared/STYLE.md). Import submodules directly.
"""

__version__ = "0.1.0"
