"""Files in and out: the rule for reading a user's text file, collections, topics and qrels (the docstore), the
``Run`` type with its TREC and MS MARCO formats, and leaderboard submission files.
"""
