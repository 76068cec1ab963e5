"""Layout of Pipeline Explorer: functions returning Dash components and plotly figures."""
