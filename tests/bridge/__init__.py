"""The bridge: step, window, settler, senders, consumer gate, publisher, faults on a broker."""
