"""One module per rule kind. Each maps a matching event to a state key and folds it in."""
