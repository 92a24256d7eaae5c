namespace Broker.Storage.Topics;

/// <summary>
/// A FIFO queue of structs in chunks of 1,024 (small-object heap for entries up to 80 bytes), for queues that grow to
/// hundreds of thousands of entries: a <see cref="Queue{T}"/> that size is one large array that doubles as it grows, and
/// the GC keeps the large arrays it leaves behind (see docs/perf.md, S1). Chunks are dropped as the head passes them,
/// except one kept for the tail's next chunk: a queue that is enqueued and dequeued at the same rate (the deduplication
/// window at its capacity) then allocates nothing.
/// </summary>
internal sealed class ChunkedQueue<T> where T : struct
{
    private const int ChunkSize = 1024;
    private readonly Queue<T[]> _chunks = new();
    private T[]? _tail;
    private T[]? _spare;
    private int _headIndex;
    private int _tailCount;

    public int Count { get; private set; }

    public void Enqueue(T item)
    {
        if (_tail is null || _tailCount == ChunkSize)
        {
            _tail = _spare ?? new T[ChunkSize];
            _spare = null;
            _chunks.Enqueue(_tail);
            _tailCount = 0;
        }
        _tail[_tailCount++] = item;
        Count++;
    }

    public bool TryPeek(out T item)
    {
        item = Count > 0 ? _chunks.Peek()[_headIndex] : default;
        return Count > 0;
    }

    /// <summary>Copies up to <paramref name="destination"/>'s length items from the head, oldest first; returns how many.</summary>
    public int PeekHead(Span<T> destination)
    {
        int copied = 0, skip = _headIndex;
        foreach (var chunk in _chunks)
        {
            int available = Math.Min((ReferenceEquals(chunk, _tail) ? _tailCount : ChunkSize) - skip, Count - copied);
            int n = Math.Min(available, destination.Length - copied);
            chunk.AsSpan(skip, n).CopyTo(destination[copied..]);
            copied += n;
            skip = 0;
            if (copied == destination.Length || copied == Count)
                break;
        }
        return copied;
    }

    public T Dequeue()
    {
        if (Count == 0)
            throw new InvalidOperationException("the queue is empty");
        var head = _chunks.Peek();
        var item = head[_headIndex++];
        Count--;
        if (_headIndex == ChunkSize || Count == 0)
        {
            // The head chunk is used up (or the queue is empty): drop it, and start the next one from its beginning.
            _spare = _chunks.Dequeue();
            _headIndex = 0;
            if (Count == 0)
            {
                _chunks.Clear();
                _tail = null;
            }
        }
        return item;
    }
}
