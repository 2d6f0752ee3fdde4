"""gvisor-fleet: Pulumi components that put gVisor on fleets of machines."""
