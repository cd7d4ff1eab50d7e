"""The whole system under fire: several ``hubd run`` daemons, a real broker, the simulated
mesh and a central subscriber (see ``harness.py``), and the chaos scenarios that use them."""
