"""Power cuts: the power-cut filesystem (support/powercut) and every writer cut at random."""
