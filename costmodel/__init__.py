"""Cost models of mapped programs: energy, latency and area per component and layer."""
