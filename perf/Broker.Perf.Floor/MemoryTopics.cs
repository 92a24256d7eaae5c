using System.Collections.Concurrent;
using System.Threading.Channels;
using Broker.Protocol.V1;

namespace Broker.Perf.Floor;

/// <summary>Topics as in-memory queues, one per group: each group gets every message, a group's consumers compete.</summary>
internal sealed class MemoryTopics
{
    private readonly ConcurrentDictionary<string, Topic> _topics = new();

    public Topic GetOrCreate(string name) => _topics.GetOrAdd(name, static topicName => new Topic(topicName));

    public void Delete(string name) => _topics.TryRemove(name, out _);

    internal sealed class Topic(string name)
    {
        private readonly ConcurrentDictionary<string, Channel<Delivery>> _groups = new();
        private long _nextOffset;

        public ChannelReader<Delivery> Group(string group) =>
            _groups.GetOrAdd(group, static _ => Channel.CreateUnbounded<Delivery>()).Reader;

        /// <summary>Hands every message to every group; returns the first offset.</summary>
        public long Publish(IReadOnlyList<Message> messages)
        {
            long first = Interlocked.Add(ref _nextOffset, messages.Count) - messages.Count;
            for (int i = 0; i < messages.Count; i++)
            {
                foreach (var group in _groups.Values)
                {
                    group.Writer.TryWrite(new Delivery
                    {
                        Topic = name,
                        Offset = (ulong)(first + i),
                        Payload = messages[i].Payload,
                        Attempt = 1,
                        Token = (ulong)(first + i),
                    });
                }
            }
            return first;
        }
    }
}
