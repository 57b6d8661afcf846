"""SVD Studio's Streamlit app: `streamlit run app/main.py`. Pages in views/, session state in state.py, the
process-wide model and queue in server.py."""
