"""Example datasets shipped inside the package, so examples and tests never download."""
