using System.Text.Json;
using Broker.Storage.Files;

namespace Broker.Storage.Topics;

/// <summary>
/// What a topic folder says about itself (<c>topic.json</c>). Its presence marks a topic as created: it is written
/// to a temporary file, flushed to disk and renamed into place, so a crash leaves either no topic or a whole one.
/// <see cref="Layout"/> records the page and segment sizes of the topic's logs; it is missing in topics created
/// before it was recorded (<see cref="TopicLayout.Legacy"/> applies to them). <see cref="Retention"/> is missing for
/// topics that keep everything (and in files written before retention existed); UpdateTopic rewrites the file the same
/// durable way. <see cref="Properties"/> (<see cref="TopicProperties"/>) is missing when there are none.
/// </summary>
internal sealed record TopicMetadata(int FormatVersion, string Name, long CreatedUnixMs, TopicLayout? Layout = null, TopicRetention? Retention = null,
    IReadOnlyDictionary<string, string>? Properties = null)
{
    public const string FileName = "topic.json";
    public const int CurrentFormatVersion = 1;

    public static TopicMetadata? TryRead(string topicDirectory)
    {
        string path = Path.Combine(topicDirectory, FileName);
        if (!File.Exists(path))
            return null;
        return JsonSerializer.Deserialize<TopicMetadata>(File.ReadAllBytes(path));
    }

    public void WriteDurably(string topicDirectory)
    {
        DurableFile.Replace(Path.Combine(topicDirectory, FileName), file => JsonSerializer.Serialize(file, this));
    }
}
