"""The trading brain: model slots, validation, atomic install and hot swap."""
