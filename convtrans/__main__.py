"""`python -m convtrans` is the CLI; torchrun uses it: `torchrun ... -m convtrans train ...`."""

from convtrans.cli import main

main()
