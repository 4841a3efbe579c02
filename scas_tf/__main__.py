"""`python -m scas_tf ...` is the `scas` command."""
from scas_tf.console import main

main()
