"""dvadm's own commands. Each is an entry point in ``dvadm.commands``, loaded on its own."""
