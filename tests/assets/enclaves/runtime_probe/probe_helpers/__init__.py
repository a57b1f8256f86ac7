"""A package inside the bundle, imported from the measured bytes."""

GREETING = "hello from the bundle"
