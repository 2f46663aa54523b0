// The start every SVG picture Pipeforge draws shares.
#pragma once

#include <string>

namespace pf {

/// The XML declaration, the opening <svg> element of a `width` x `height`
/// pixel picture (sans-serif text, 12 px) and a white background; the caller
/// draws on it and closes it with "</svg>\n".
std::string svg_header(double width, double height);

}  // namespace pf
