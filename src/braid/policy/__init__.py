"""Pure decisions: the CoDE cost function, path choice, DIMEE tier routing."""
