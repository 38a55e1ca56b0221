"""Repository-wide promises: code layout, docs agree with the code, the test harness works."""
