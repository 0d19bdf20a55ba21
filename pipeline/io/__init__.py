"""Files in: the rule for reading a user's text file, collections, topics and qrels (the docstore), and the ``Run``
type with its TREC and MS MARCO formats.
"""
