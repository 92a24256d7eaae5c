using Microsoft.Extensions.Logging;

namespace Broker.Storage.Files;

/// <summary>
/// Dedicated threads that perform every log write of one store: synchronous, write-through writes, then the
/// writer's completion callback on the same thread.
/// <para>Why not the thread pool: FASTER's managed device runs each write as a blocking pool work item plus two
/// more pool hops around it, so a busy store both starved the pool (the issue-5 trap) and paid a context switch per
/// hop, which on this kind of VM is the largest single cost (perf: 35% of the broker's CPU in the hypervisor's
/// context-switch path at 20k msg/s). A write handed to a writer thread costs one wake-up, and no pool thread ever
/// waits for the disk.</para>
/// </summary>
internal sealed partial class DiskWriter : IDisposable
{
    private readonly object _sync = new();
    private readonly Queue<IDiskWrite> _queue = new();
    private readonly Thread[] _threads;
    private int _idle;
    private readonly ILogger _logger;
    private bool _stopping;

    public DiskWriter(int threads, ILogger logger)
    {
        _logger = logger;
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        _threads = new Thread[threads];
        for (int i = 0; i < threads; i++)
        {
            _threads[i] = new Thread(Run) { IsBackground = true, Name = $"broker-disk-writer-{i}" };
            _threads[i].Start();
        }
    }

    /// <summary>Queues a write; one of the writer threads performs it.</summary>
    public void Enqueue(IDiskWrite write)
    {
        lock (_sync)
        {
            if (_stopping)
                throw new ObjectDisposedException(nameof(DiskWriter));
            _queue.Enqueue(write);
            // Wake a thread only if one is waiting: a busy thread takes the write when it finishes its current one.
            if (_idle > 0)
                Monitor.Pulse(_sync);
        }
    }

    private void Run()
    {
        while (true)
        {
            IDiskWrite write;
            lock (_sync)
            {
                while (_queue.Count == 0)
                {
                    if (_stopping)
                        return;
                    _idle++;
                    Monitor.Wait(_sync);
                    _idle--;
                }
                write = _queue.Dequeue();
            }
            try
            {
                write.Execute();
            }
            catch (Exception error)
            {
                // Execute reports I/O errors through the write's callback; an exception here came from that callback
                // (FASTER's code). The thread pool device it replaces dropped those too, as unobserved task faults;
                // letting it escape would kill the whole broker. It is reported, not hidden.
                Events.CompletionCallbackFailed(_logger, error);
            }
        }
    }

    /// <summary>Finishes the queued writes, then stops the threads.</summary>
    public void Dispose()
    {
        lock (_sync)
        {
            _stopping = true;
            Monitor.PulseAll(_sync);
        }
        foreach (var thread in _threads)
            thread.Join();
    }
}

internal sealed partial class DiskWriter
{
    private static partial class Events
    {
        [LoggerMessage(EventId = 3201, Level = LogLevel.Error, Message = "A log write's completion callback threw; the write's log may be left waiting")]
        public static partial void CompletionCallbackFailed(ILogger logger, Exception error);
    }
}

/// <summary>One queued write: performs the I/O and reports its outcome; must not throw.</summary>
internal interface IDiskWrite
{
    void Execute();
}
