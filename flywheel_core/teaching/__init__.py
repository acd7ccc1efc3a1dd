"""Pure functions behind the offline corpus teacher: metrics, exam design, example selection."""
