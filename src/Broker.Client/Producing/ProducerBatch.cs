using System.Buffers;
using Broker.Protocol.V1;
using Google.Protobuf;

namespace Broker.Client;

/// <summary>
/// One topic's batch in a <see cref="BrokerProducer"/>: its messages encoded, as they are sent, into the body of a
/// PublishRequest (the topic and the messages; the stream adds its request id when it writes the batch) in a buffer
/// rented from the shared pool, and each message's durable task.
/// <para>Why encoded at send: a producer must keep every message until the broker confirms it (a retry sends it
/// again). Kept as objects (a payload copy, a protobuf message and a pending entry each), thousands of messages in
/// flight survive every garbage collection and are copied by it; the SDK producer's runner then paused for 1.8 s per
/// million messages against 0.26 s for raw streams (docs/perf.md, W7). One buffer per batch is copied by nobody.</para>
/// <para>Filled under the producer's lock; once sealed, only its publish touches it, and returns the buffer when it is done.</para>
/// </summary>
internal sealed class ProducerBatch
{
    // PublishRequest's field numbers (proto/broker/v1/broker.proto), each with wire type 2 (length-delimited).
    private const byte TopicTag = (1 << 3) | 2;
    private const byte MessagesTag = (2 << 3) | 2;

    private readonly List<TaskCompletionSource<PublishedMessage>> _durable = [];
    private readonly int _headerBytes;
    private byte[] _buffer;
    private int _length;

    /// <param name="topic">The topic every message of the batch goes to.</param>
    /// <param name="expectedBytes">The buffer to rent first (the size of this topic's previous batch), so it seldom grows.</param>
    /// <param name="lingerEnds">When the producer sends it even if not full (<see cref="Environment.TickCount64"/>).</param>
    public ProducerBatch(string topic, int expectedBytes, long lingerEnds)
    {
        Topic = topic;
        LingerEnds = lingerEnds;
        int topicBytes = CodedOutputStream.ComputeStringSize(topic);
        _buffer = ArrayPool<byte>.Shared.Rent(Math.Max(expectedBytes, 1 + topicBytes + 1024));
        _buffer[0] = TopicTag;
        _length = 1 + WriteLengthPrefixed(_buffer.AsSpan(1), topic);
        _headerBytes = _length;
    }

    public string Topic { get; }

    public long LingerEnds { get; }

    public int Count => _durable.Count;

    /// <summary>The encoded messages' bytes (without the topic).</summary>
    public int MessageBytes => _length - _headerBytes;

    /// <summary>The whole encoded body, valid until <see cref="ReturnBuffer"/>.</summary>
    public ReadOnlyMemory<byte> Body => _buffer.AsMemory(0, _length);

    /// <summary>The bytes <paramref name="messageSize"/> (a message's <c>CalculateSize()</c>) takes in a batch.</summary>
    public static int EncodedSize(int messageSize) => 1 + CodedOutputStream.ComputeLengthSize(messageSize) + messageSize;

    /// <summary>Whether a message of <paramref name="encodedSize"/> bytes may join; a lone message always may (an oversized one goes alone).</summary>
    public bool Fits(int encodedSize, int maxMessages, int maxBytes) =>
        Count == 0 || (Count < maxMessages && MessageBytes + encodedSize <= maxBytes);

    public bool IsFull(int maxMessages, int maxBytes) => Count >= maxMessages || MessageBytes >= maxBytes;

    /// <summary>Encodes <paramref name="message"/> (of <paramref name="messageSize"/> bytes) into the batch; the task completes once it is durable.</summary>
    public Task<PublishedMessage> Append(Message message, int messageSize)
    {
        int encoded = EncodedSize(messageSize);
        EnsureRoom(encoded);
        var span = _buffer.AsSpan(_length, encoded);
        span[0] = MessagesTag;
        int prefix = WriteVarint(span[1..], (uint)messageSize);
        message.WriteTo(span.Slice(1 + prefix, messageSize));
        _length += encoded;
        // Completed by the batch's publish, which runs apart from the stream's read loop: continuations may run inline.
        var durable = new TaskCompletionSource<PublishedMessage>();
        _durable.Add(durable);
        return durable.Task;
    }

    /// <summary>Every message is durable: completes each task with its offset.</summary>
    public void Complete(PublishResult result)
    {
        for (int i = 0; i < _durable.Count; i++)
            _durable[i].TrySetResult(new PublishedMessage(Topic, result.OffsetOf(i), result.IsDuplicate(i)));
    }

    /// <summary>The batch failed: each message's task fails with <paramref name="error"/>; returns each failure (its payload copied out of the buffer).</summary>
    public IReadOnlyList<PublishFailure> Fail(Exception error)
    {
        var request = PublishRequest.Parser.ParseFrom(Body.Span);
        var failures = request.Messages.Select(m => new PublishFailure(Topic, m.Payload.Memory, error)).ToList();
        foreach (var durable in _durable)
            durable.TrySetException(error);
        return failures;
    }

    /// <summary>Gives the buffer back to the pool: only once no write of <see cref="Body"/> can happen any more.</summary>
    public void ReturnBuffer()
    {
        var buffer = _buffer;
        _buffer = [];
        _length = 0;
        if (buffer.Length > 0)
            ArrayPool<byte>.Shared.Return(buffer);
    }

    private void EnsureRoom(int bytes)
    {
        if (_length + bytes <= _buffer.Length)
            return;
        var larger = ArrayPool<byte>.Shared.Rent(Math.Max(_buffer.Length * 2, _length + bytes));
        _buffer.AsSpan(0, _length).CopyTo(larger);
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = larger;
    }

    private static int WriteLengthPrefixed(Span<byte> destination, string text)
    {
        int bytes = System.Text.Encoding.UTF8.GetByteCount(text);
        int prefix = WriteVarint(destination, (uint)bytes);
        System.Text.Encoding.UTF8.GetBytes(text, destination[prefix..]);
        return prefix + bytes;
    }

    /// <summary>Protobuf's base-128 varint; returns the bytes written.</summary>
    internal static int WriteVarint(Span<byte> destination, ulong value)
    {
        int i = 0;
        while (value >= 0x80)
        {
            destination[i++] = (byte)(value | 0x80);
            value >>= 7;
        }
        destination[i++] = (byte)value;
        return i;
    }
}
