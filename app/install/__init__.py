"""The one writer of the models directory: layout, lock, transaction, records, backups, watch."""
