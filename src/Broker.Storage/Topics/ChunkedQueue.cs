namespace Broker.Storage.Topics;

/// <summary>
/// A FIFO queue of structs in chunks of 1,024 (small-object heap for entries up to 80 bytes), for queues that grow to
/// hundreds of thousands of entries: a <see cref="Queue{T}"/> that size is one large array that doubles as it grows, and
/// the GC keeps the large arrays it leaves behind (see docs/perf.md, S1). Chunks are dropped as the head passes them.
/// </summary>
internal sealed class ChunkedQueue<T> where T : struct
{
    private const int ChunkSize = 1024;
    private readonly Queue<T[]> _chunks = new();
    private T[]? _tail;
    private int _headIndex;
    private int _tailCount;

    public int Count { get; private set; }

    public void Enqueue(T item)
    {
        if (_tail is null || _tailCount == ChunkSize)
        {
            _tail = new T[ChunkSize];
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
            _chunks.Dequeue();
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
