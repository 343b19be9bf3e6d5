"""cocotb test modules (loaded inside the simulator process)."""
